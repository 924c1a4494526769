from vbdecl.entry import console_main

console_main(isolate=False)
