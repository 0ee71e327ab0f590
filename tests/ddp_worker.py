"""Run by the distributed tests under torchrun: train a config file's run for a number of steps.

    torchrun --standalone --nproc_per_node 2 tests/ddp_worker.py CONFIG.json RUN_DIR STOP_AFTER [--resume]
"""

import sys

import torch

from introvae import TrainConfig
from introvae.trainer import Trainer, resume

torch.set_num_threads(1)
config_file, run_dir, stop_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
if "--resume" in sys.argv:
    trainer = resume(run_dir, show_progress=False)
else:
    trainer = Trainer(TrainConfig.load(config_file), run_dir, show_progress=False)
trainer.train(stop_after=stop_after)
trainer.close()
run = trainer.run
print(f"rank {trainer.world.rank}: step {run.step} of {run.total_steps}, "
      f"epoch {run.epoch} +{run.epoch_images} images", flush=True)
