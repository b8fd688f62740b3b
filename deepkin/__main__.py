from deepkin.cli import main

main()
