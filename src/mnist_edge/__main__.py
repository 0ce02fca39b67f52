from mnist_edge.cli.runtime import main

main()
