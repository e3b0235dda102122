"""Engine names (``mtop-edge-int8-unconstrained``, ``ctranslate2-int8-vmap``, ``mtop-edge@cpu-int4``)
read once into their parts."""

from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("vmap", "unconstrained")
PROFILE_PREFIX = "mtop-edge@"  # an export profile's own artifact: mtop-edge@NAME


@dataclass(frozen=True)
class EngineName:
    """``family`` (mtop-edge, torch, optimum, ctranslate2), ``precision`` (int8, fp32, bf16; empty
    for an export profile, whose name is ``profile``) and ``variant`` (vmap, unconstrained or empty)."""

    family: str
    precision: str
    variant: str = ""
    profile: str = ""

    @classmethod
    def parse(cls, name: str) -> EngineName:
        base, variant = name, ""
        for candidate in VARIANTS:
            if name.endswith("-" + candidate):
                base, variant = name[: -len(candidate) - 1], candidate
        if base.startswith(PROFILE_PREFIX):
            return cls("mtop-edge", "", variant, base[len(PROFILE_PREFIX) :])
        family, _, precision = base.rpartition("-")
        return cls(family, precision, variant)

    @property
    def base(self) -> str:
        """The artifact an engine runs: ``family-precision``, or ``mtop-edge@PROFILE``."""
        return PROFILE_PREFIX + self.profile if self.profile else f"{self.family}-{self.precision}"

    @property
    def constrained(self) -> bool:
        return self.family == "mtop-edge" and self.variant != "unconstrained"


def base_name(engine: str) -> str:
    """The engine family and precision (``ctranslate2-int8-vmap`` -> ``ctranslate2-int8``)."""
    return EngineName.parse(engine).base


def variant(engine: str) -> str:
    """What distinguishes an engine from its base: ``vmap``, ``unconstrained`` or ``""``."""
    return EngineName.parse(engine).variant
