"""Modular training methods as peers: MwT (the default), NeMo and MODA (see ``base.py``).

``get_method("moda")``, ``get_method("nemo", {"temperature": 0.3})`` or a method object
(``NeMo(temperature=0.3)``) is what ``mwt.train(..., method=...)``, ``TrainConfig.method`` /
``method_options`` and the CLI's ``--method`` / ``--method-option`` resolve to.
"""

from mwt.checks import short_repr
from mwt.errors import MwtError
from mwt.methods.base import COMPOSITIONS, Method
from mwt.methods.moda import MODA
from mwt.methods.mwt import MwT
from mwt.methods.nemo import NeMo

METHODS: dict[str, type[Method]] = {"mwt": MwT, "nemo": NeMo, "moda": MODA}
DEFAULT_METHOD = "mwt"


def get_method(method=None, options: dict | None = None) -> Method:
    """The method object for a name (with ``options``, its hyper-parameters) or an object.
    None is MwT. An unknown name or option, or a bad value, is one clear error."""
    if isinstance(method, Method):
        if options:
            raise MwtError("give a method object or options, not both")
        method.validate()
        return method
    name = DEFAULT_METHOD if method is None else method
    if not isinstance(name, str) or name.lower() not in METHODS:
        raise MwtError(f"unknown method {short_repr(name)}; known: {', '.join(METHODS)}")
    cls = METHODS[name.lower()]
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise MwtError(f"method options must be a mapping, got {short_repr(options)}")
    unknown = sorted(set(options) - set(cls.option_names()))
    if unknown:
        known = ", ".join(cls.option_names()) or "none"
        raise MwtError(f"{cls.name} has no option {unknown[0]!r} (its options: {known})")
    obj = cls(**options)
    obj.validate()
    return obj


def method_of(config) -> Method:
    """The method a ``TrainConfig`` (or its saved dict) names."""
    if isinstance(config, dict):
        return get_method(config.get("method"), config.get("method_options"))
    return get_method(config.method, config.method_options)


__all__ = ["Method", "MwT", "NeMo", "MODA", "METHODS", "COMPOSITIONS", "DEFAULT_METHOD",
           "get_method", "method_of"]
