"""The real-image track: preparing MNIST or a folder, training its sweeps, Table 1 and Figs. 5 to 8."""
