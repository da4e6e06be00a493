"""Raw data of a run: the synthetic demo world, the Cell Painting Gallery screens (download, LoadData and
metadata readers, inventories), a lab's own screen from a folder, the readers of the gene side's inputs (PPI,
expression, gene sets: :mod:`~image2reg.data.network_inputs`), the check of what a run's stages need, and what
stage 00 shows of a dataset."""
