"""xmr.train: the training configuration, loop and run (the model they fit is :mod:`xmr.models`).

``xmr.train`` is also the public API's training function: calling the package,
``xmr.train(config, dataset, out, ...)``, calls :func:`xmr.api.train` (the package's module
class is given a ``__call__``, so the subpackage and the function share the one name that
``import xmr.train.config`` binds on :mod:`xmr`).
"""

import sys as _sys
import types as _types


class _TrainModule(_types.ModuleType):
    def __call__(self, *args, **kwargs):
        from xmr.api import train

        return train(*args, **kwargs)


_sys.modules[__name__].__class__ = _TrainModule
