from mnist_edge.cli_runtime import main

main()
