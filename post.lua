wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer "
wrk.path = "/hooks/e6db9c1a-d15f-4248-81fa-5b61fc321def/requests/29dd8606-4e01-46cb-aca2-dd6022e74865/redeliver"
