"""Methods, one module per paper family. The table below names what each module registers: a method's module
is imported when the method is first looked up, so a run imports only its own family (a test checks the table
against what the modules register)."""

from mpiclip.methods.base import METHODS, Method

FAMILIES = {  # module -> the methods it registers, in their listing order
    "asgd": ("asgd", "clipped_asgd", "delay_adaptive_asgd", "minibatch_sgd", "rennala_sgd", "ringmaster_asgd"),
    "gradalign": ("fedavg", "fedga", "gradalign", "scaffold", "scaffold_stored", "fedprox", "lbsgd"),
    "ce_fedavg": ("ce_fedavg",),
    "ef21": ("gd", "cgd", "ef14", "ef21", "ef21_plus"),
    "ef21_extensions": ("ef21_sgd", "ef21_page", "ef21_pp", "ef21_bc", "ef21_hb", "ef21_prox"),
    "clip21": ("clip_gd", "clip_sgd", "clip_sgdm", "clip21_gd", "clip21_sgd", "clip21_avg"),
    "clip21_sgd2m": ("clip21_sgd2m",),
    "diana": ("diana",),
    "dpsgd": ("dp_sgd",),
    "ef_sgd": ("ef14_sgd", "ef21_sgd_hb"),
    "fedbuff": ("fedbuff",),
}
for _module, _names in FAMILIES.items():
    METHODS.declare(f"{__name__}.{_module}", _names)

__all__ = ["METHODS", "Method", "FAMILIES"]
