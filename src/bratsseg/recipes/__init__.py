"""Named training recipes shipped with bratsseg (YAML files beside this module); see :mod:`bratsseg.engine.recipes`."""
