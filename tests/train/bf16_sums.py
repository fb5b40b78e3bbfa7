"""Run as a script by test_parts: DeepSpeed bf16 engines (on CPU) summing micro-batch gradients, one per ZeRO stage.

A one-weight model sees one micro-batch with gradient 1 and seven with gradient 1e-3. Prints one JSON line: per
stage, the optimizer's class, the global gradient norm DeepSpeed measured at the step, and the weight the ZeRO
checkpoint consolidates to (the fp32 master) next to the bf16 weight the module holds. argv: `fp32` (the
trainer's config) or `bf16` (the config without its fp32 sums).
"""

import json
import sys
import tempfile

import deepspeed
import torch
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

from realrestorer.train.config import StageConfig
from realrestorer.train.deepspeed import deepspeed_config, init_one_process

init_one_process(torch.device("cpu"))
out = {}
for zero in (2, 3):
    stage = StageConfig(use_gpu=True, zero_stage=zero, batch_size=8, micro_batch_size=1, lr=1e-5, warmup_steps=0,
                        weight_decay=0.0)
    config = deepspeed_config(stage)
    if sys.argv[1] == "bf16":
        config.pop("data_types", None)
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(model.weight)
    engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=config)
    for x in [1.0] + [1e-3] * 7:
        engine.backward(engine(torch.tensor([[x]], dtype=torch.bfloat16)).float().sum())
        engine.step()
    with tempfile.TemporaryDirectory() as directory:
        engine.save_checkpoint(directory, tag="step")
        master = get_fp32_state_dict_from_zero_checkpoint(directory, tag="step")["weight"]
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        held = engine.module.weight
        out[zero] = {"optimizer": type(engine.optimizer).__name__, "norm": float(engine.get_global_grad_norm()),
                     "master": float(master), "module": float(held), "module_dtype": str(held.dtype)}
print(json.dumps(out))
