"""Pydantic models of every JSON body (v1 and the KServe Open Inference Protocol v2).

Request bodies are validated strictly: a number is a JSON number (``"1200"`` and ``true`` are
not), a string a JSON string, a flag a JSON boolean.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Output = Literal["net_production_rates", "heat_release_rate"]


class ErrorBody(BaseModel):
    error: str = Field(..., description="One line naming the field and the problem")


# -- v1 ---------------------------------------------------------------------------------------------

class ModelInfo(BaseModel):
    """What a client needs to build states for a model."""

    name: str
    description: str = ""
    species: list[str] = Field(..., description="Column order of Y after T (K) and P (Pa)")
    n_species: int
    width: int = Field(..., description="2 + n_species columns per cell")
    dt_s: float = Field(..., description="The model's step (s); a request's dt must be a whole multiple")
    mechanism_sha256: str
    mechanism_source: str
    phase: str
    temperature_k: list[float] = Field(..., description="Training domain [min, max] (K)")
    pressure_pa: list[float] = Field(..., description="Training domain [min, max] (Pa)")
    frozen_temperature_k: float = Field(..., description="Cells below it pass through unchanged")
    inert_species: list[str]
    outputs: list[str] = Field(..., description="Optional outputs a step can return")
    device: str
    precision: str = Field("float32", description="The networks' dtype on this service "
                           "(float32, or bfloat16 for a model validated in it on a CPU that "
                           "multiplies it natively)")
    near_equilibrium_route_below: float | None = Field(
        None, description="With a near-equilibrium network: cells whose predicted rates are all "
        "below this fraction of the main target scale take its rates; null without one")


class ModelList(BaseModel):
    models: list[ModelInfo]


class StepRequest(BaseModel):
    """A JSON step (for small calls; large ones should use the binary body)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    states: list[list[float]] = Field(..., description="[n, 2+ns]: T (K), P (Pa), Y in the model's order")
    dt: float | None = Field(None, description="Step (s), a whole multiple of the model's dt_s")
    dtype: Literal["float64", "float32"] = Field("float64", description="Precision of the arithmetic "
                                                 "boundary: the states are cast to it, as a binary "
                                                 "body of that dtype would be")
    outputs: list[Output] = Field(default_factory=list, description="Optional outputs at the new states")
    mechanism_sha256: str | None = Field(None, description="409 unless it is the model's")
    species: list[str] | None = Field(None, description="409 unless it is the model's species order")


class StepResponse(BaseModel):
    states: list[list[float]] = Field(..., description="[n, 2+ns] advanced states")
    n_cells: int
    n_frozen: int = Field(..., description="Cells below the frozen temperature, returned unchanged")
    n_fallback: int = Field(..., description="Cells outside the training domain, stepped by Cantera")
    n_substeps: int
    net_production_rates: list[list[float | None]] | None = Field(
        None, description="[n, ns] kmol/m³/s at the returned states (Cantera)")
    heat_release_rate: list[float | None] | None = Field(None, description="[n] W/m³ at the returned states")


# -- KServe Open Inference Protocol v2 ----------------------------------------------------------------

class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadataV2(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferInputTensor(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size: bytes of this "
                                              "tensor in the binary part of the body")
    data: list[float] | None = Field(None, description="The values in row-major order (nested rows "
                                     "are flattened)")

    @field_validator("data", mode="before")
    @classmethod
    def _flatten_rows(cls, data: Any) -> Any:
        """KServe clients may send ``[[...], [...]]``; the values are checked after flattening."""
        if isinstance(data, list) and data and isinstance(data[0], list):
            return [v for row in data for v in (row if isinstance(row, list) else [row])]
        return data


class InferOutputTensor(InferInputTensor):
    """An output tensor: the same fields as an input (KServe v2)."""


class OutputParameters(BaseModel):
    model_config = ConfigDict(strict=True)

    binary_data: bool | None = Field(None, description="Answer this output as binary data")


class InferRequestedOutput(BaseModel):
    model_config = ConfigDict(strict=True)

    name: str
    parameters: OutputParameters | None = None


class InferParameters(BaseModel):
    """The request parameters the service reads; any others are accepted and ignored (KServe)."""

    model_config = ConfigDict(strict=True, extra="allow")

    dt: float | None = Field(None, description="Step (s), a whole multiple of the model's dt_s")
    mechanism_sha256: str | None = Field(None, description="409 unless it is the model's")
    binary_data_output: bool | None = Field(None, description="Answer every output as binary data")


class InferRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    id: str | None = None
    parameters: InferParameters | None = None
    inputs: list[InferInputTensor]
    outputs: list[InferRequestedOutput] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[InferOutputTensor]
