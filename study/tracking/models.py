"""The U-Net of a run as an MLflow model: logged with every strategy run, registered for a sweep's best trial.

Every run that leaves a checkpoint logs its U-Net as the model ``unet-<strategy>`` (the pickled
PyTorch module, with its signature: (B, 1, H, W) images of the training resolution in, (B, N, H, W) logits out), so the
experiment's Models tab lists one model per strategy run and the evaluation metrics logged
against it. A sweep registers its best trial's model (``register``) with descriptions, and the
alias ``champion`` moves to the newest best.
"""

import logging
import os
from contextlib import contextmanager
from importlib.metadata import version

import numpy as np
import torch
from mlflow.exceptions import MlflowException

__all__ = ["CHAMPION", "log_unet", "register"]

CHAMPION = "champion"
# what loading the pickled module needs; stated, because inferring it costs seconds per model
REQUIREMENTS = [f"torch=={version('torch')}", f"segmentation-models-pytorch=={version('segmentation-models-pytorch')}"]


@contextmanager
def global_uri(uri: str):
    """MLflow's global tracking URI set to ``uri`` while the block runs, as it was after (``set_tracking_uri``
    also exports ``MLFLOW_TRACKING_URI``; the previous value, None included, restores it). ``log_model`` and
    the registry's lookup of a logged model (``models:/<id>``) read the global URI, not their client's."""
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)  # None unsets the environment variable again


@contextmanager
def active_run(uri: str, run_id: str):
    """MLflow's global active run ``run_id`` at ``uri`` (``log_model`` needs one), ended after the block."""
    import mlflow

    with global_uri(uri), mlflow.start_run(run_id=run_id):
        yield


def log_unet(uri: str, run_id: str, network: torch.nn.Module, name: str, image_size: int, params: dict) -> str:
    """Log the U-Net ``network`` as the model ``name`` of run ``run_id``; returns its model id."""
    import mlflow.pytorch
    from mlflow.models import infer_signature

    example = np.zeros((1, 1, image_size, image_size), dtype=np.float32)
    signature = infer_signature(example, heatmap_logits(network, example))
    flavor_log = logging.getLogger("mlflow.pytorch")
    level = flavor_log.level
    flavor_log.setLevel(logging.ERROR)  # its warning that pickles run code on loading: so do checkpoints
    try:
        with active_run(uri, run_id):
            info = mlflow.pytorch.log_model(
                network,
                name=name,
                signature=signature,  # stated: from an input example MLflow would load and run the model twice
                pip_requirements=REQUIREMENTS,
                serialization_format="pickle",  # pt2 (torch.export) costs about 1.5 s more per model
                params={key: str(value) for key, value in params.items()},
            )
    finally:
        flavor_log.setLevel(level)
    return info.model_id


@torch.no_grad()
def heatmap_logits(network: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """(B, N, H, W) float32 the network's output for (B, 1, H, W) images, in eval mode (its mode kept)."""
    was_training = network.training
    network.eval()
    logits = network(torch.from_numpy(images)).float().numpy()
    network.train(was_training)
    return logits


def register(
    client, name: str, model_id: str, run_id: str, description: str, version_description: str, tags: dict
) -> str:
    """Register the logged model ``model_id`` as a new version of ``name`` and make it the ``champion``;
    returns the version."""
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        client.update_registered_model(name, description=description)
    with global_uri(client.tracking_uri):
        registered = client.create_model_version(
            name,
            source=f"models:/{model_id}",
            run_id=run_id,
            model_id=model_id,
            description=version_description,
            tags={key: str(value) for key, value in tags.items()},
        )
    client.set_registered_model_alias(name, CHAMPION, registered.version)
    return str(registered.version)
