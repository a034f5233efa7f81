"""Reading any Pyro program from a trace: roles, arguments, running, densities, generation."""
