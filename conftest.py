"""pytest's settings for the docstring examples in python/toklab (collected with
``--doctest-modules``): the LM modules import torch, an optional extra, so without it they are
left out rather than failing the collection."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["python/toklab/lm/*"]
