"""The gene caller's training task: the region around each gene's first base is found on both
strands, from the labels alone; the weighted loss is the weighted mean (plain when every weight is
equal), weighs only training, and refuses settings that make no sense."""

import pytest
import torch
import torch.nn.functional as F

from pipelines.genome.annotation import CDS
from pipelines.genome.labels import cds_labels
from pipelines.genome.task import GeneTaggingTask, gene_start_region
from pipelines.tasks.tagging import IGNORE_INDEX, TaggingTask
from seqmodels import MambaTagger

pytestmark = pytest.mark.usefixtures("quick_cpu")


def window_labels():
    """120 bases: a forward gene at 10..39, a reverse gene at 60..89 (first base 89), and a forward
    gene cut by the window's start (0..8, no first base inside); then 10 bases of padding."""
    cds = [CDS("w", ((10, 40, 1),)), CDS("w", ((60, 90, -1),)), CDS("w", ((0, 9, 1),), codon_start=2)]
    labels = torch.from_numpy(cds_labels(120, cds)).long()
    return torch.cat([labels, torch.full((10, 2), IGNORE_INDEX)])[None]  # (1, 130, 2)


def test_start_regions_run_upstream_and_downstream_along_each_strand():
    region = gene_start_region(window_labels(), before=3, after=6)[0]  # (130, 2)
    assert region[:, 0].nonzero().flatten().tolist() == list(range(7, 17))  # 10 - 3 .. 10 + 6
    assert region[:, 1].nonzero().flatten().tolist() == list(range(83, 93))  # 89 - 6 .. 89 + 3


def tiny_task(cls=GeneTaggingTask, **kwargs):
    torch.manual_seed(0)
    network = MambaTagger(n_tracks=2, n_classes=4, d_model=8, n_layer=1, bidirectional=True, rc_equivariant=True)
    return cls(network, **kwargs)


def batch():
    labels = window_labels()
    tokens = torch.randint(2, 6, labels.shape[:2])
    tokens[:, 120:] = 0
    return {"tokens": tokens, "lengths": torch.tensor([120]), "labels": labels}


def test_equal_weights_give_the_plain_loss_and_unequal_ones_the_weighted_mean():
    task, data = tiny_task(class_weights=[1.0, 2.0, 2.0, 2.0]), batch()
    logits = task(data["tokens"], data["lengths"]).float()
    labels = data["labels"]
    plain = F.cross_entropy(logits.reshape(-1, 4), labels.reshape(-1), weight=task.class_weights)
    torch.testing.assert_close(task._weighted_loss(logits, labels, torch.full(labels.shape, 3.0)), plain)
    w = torch.rand(labels.shape)
    valid = labels.reshape(-1) != IGNORE_INDEX
    y = labels.reshape(-1)[valid]
    nll = -logits.reshape(-1, 4)[valid].log_softmax(-1).gather(1, y[:, None])[:, 0]
    cw = task.class_weights[y] * w.reshape(-1)[valid]
    torch.testing.assert_close(task._weighted_loss(logits, labels, w), (nll * cw).sum() / cw.sum())


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # no Trainer here: logging is a no-op
def test_start_weight_weighs_training_only():
    plain, weighted, data = tiny_task(TaggingTask), tiny_task(start_weight=5.0), batch()
    assert tiny_task().position_weights(data["labels"]) is None  # weight 1: the plain task
    weights = weighted.position_weights(data["labels"])
    assert set(weights.unique().tolist()) == {1.0, 5.0}
    assert weights[0, :, 0].eq(5.0).nonzero().flatten().tolist() == list(range(0, 71))  # 30 up, 60 down of 10
    assert not torch.isclose(weighted._step(data, "train"), plain._step(data, "train"))
    torch.testing.assert_close(weighted._step(data, "val"), plain._step(data, "val"))


@pytest.mark.parametrize("kwargs, message", [({"start_weight": 0.0}, "start_weight"),
                                             ({"start_bases": (30, -1)}, "start_bases")])
def test_settings_that_make_no_sense_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_task(**kwargs)
