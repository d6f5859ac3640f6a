from hybridserver.cli import main

main(prog_name="hybridserver")
