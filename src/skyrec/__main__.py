from skyrec.cli import main

main()
