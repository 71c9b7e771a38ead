from so101_sim2real.cli.app import main

main()
