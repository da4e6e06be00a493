"""Raw data of a run: the synthetic demo world, the Cell Painting Gallery screens (download, LoadData and
metadata readers, inventories), a lab's own screen from a folder, expression, interactome and gene lists,
and the check of what a run's stages need."""
