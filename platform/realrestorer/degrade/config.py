"""The `degrade` section of the config tree."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DegradeConfig(BaseModel):
    """How clean images are degraded."""

    model_config = ConfigDict(extra="forbid")

    severity_min: float = Field(0.0, ge=0.0, le=1.0, description="Lowest severity drawn per sample.")
    severity_max: float = Field(1.0, ge=0.0, le=1.0, description="Highest severity drawn per sample.")
    haze_depth: str = Field(
        "prior",
        description="Depth provider for haze: 'prior' (weight-free, from the image) or a local path / s3:// URI "
        "of a depth network saved as a TorchScript file.",
    )
    reflection_layers: str | None = Field(
        None,
        description="Folder, glob or s3:// prefix of images used as reflection layers: each reflection sample (and "
        "each mixed chain with a reflection step) picks one with its own seed, fitted to the crop size; files that "
        "cannot be used are skipped and counted in the manifest. None makes the layer from the scene itself.",
    )

    @model_validator(mode="after")
    def _severity_range(self) -> "DegradeConfig":
        if self.severity_min > self.severity_max:
            raise ValueError(f"degrade.severity_min ({self.severity_min}) exceeds degrade.severity_max ({self.severity_max})")
        return self
