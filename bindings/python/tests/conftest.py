import os
import sys

# The package from this source tree (bindings/python), not an installed copy.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
