"""Studies of a built zoo (`zoo study averaging | transfer | prune | predict DIR`): what a
researcher does with the zoo's weights, per cell on Ray, drawn over the phase plane. run.py plans
and stores them; one file per study holds its math."""
