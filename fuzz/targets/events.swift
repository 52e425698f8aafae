// libFuzzer target: the audit writer's event-field reader (Audit/Records.swift):
// `EventFields.parse` (delivery_id, event, tenant_id of an upstream body) and
// `MiniJSON.topLevelStrings` with other key sets, on arbitrary bytes.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let fields = EventFields.parse(bytes)
    _ = (fields.deliveryID, fields.event, fields.tenantID)
    MiniJSON.topLevelStrings(bytes, keys: ["id", "hook_id", ""]) { _, value in _ = value.utf8.count }
    return 0
}
