import ArgumentParser
import Hookgate

HookgateCommand.main()
