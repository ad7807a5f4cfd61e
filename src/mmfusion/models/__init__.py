"""Full models, one file per family, all registered by name. Use :func:`build` and :func:`list_models`."""

from mmfusion.models import lstm, mea, misa, msaf_nets, mult, tfn  # noqa: F401  (importing a family registers its builders)
from mmfusion.models.reference import from_reference, load_pretrained
from mmfusion.models.registry import (
    build,
    config_class,
    list_models,
    model_inputs,
    register_model,
)

__all__ = [
    "build", "config_class", "from_reference", "list_models", "load_pretrained", "model_inputs", "register_model",
]
