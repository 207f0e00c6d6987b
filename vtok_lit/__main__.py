from vtok_lit.cli import console_main

console_main()
