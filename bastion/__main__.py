from bastion.cli.entry import main

main()
