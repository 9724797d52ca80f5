"""Reverse complement, crops, sliding windows and length-grouped batching."""

import numpy as np
import pytest
import torch

from pipelines.data.alphabet import tokenize
from pipelines.data.augment import (
    EpochSampler,
    LengthGroupedSampler,
    center_crop,
    random_crop,
    reverse_complement_array,
    sliding_windows,
    window_starts,
)
from seqmodels import vocab

PAIR = str.maketrans("ACGTN", "TGCAN")


def random_dna(rng, n):
    return "".join(rng.choice(list("ACGTN"), size=n))


def test_reverse_complement_matches_the_textbook_definition():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 100):
        seq = random_dna(rng, n)
        expected = seq.translate(PAIR)[::-1]
        assert vocab.decode(reverse_complement_array(tokenize(seq))) == expected


def test_reverse_complement_twice_is_the_identity():
    rng = np.random.default_rng(1)
    tokens = tokenize(random_dna(rng, 257))
    np.testing.assert_array_equal(reverse_complement_array(reverse_complement_array(tokens)), tokens)
    # The batched torch version in seqmodels agrees, and is an involution too, padding left alone.
    batch = torch.from_numpy(np.stack([tokens, tokens]).astype(np.int64))
    lengths = torch.tensor([257, 100])
    batch[1, 100:] = vocab.PAD
    once = vocab.reverse_complement(batch, lengths)
    assert torch.equal(vocab.reverse_complement(once, lengths), batch)
    np.testing.assert_array_equal(once[0].numpy(), reverse_complement_array(tokens))


def test_crops_are_contiguous_pieces_of_the_right_length():
    tokens = np.arange(100, dtype=np.int64)  # positions stand in for tokens
    rng = np.random.default_rng(2)
    starts = set()
    for _ in range(200):
        piece = random_crop(tokens, 30, rng)
        assert len(piece) == 30 and np.all(np.diff(piece) == 1)
        starts.add(int(piece[0]))
    assert min(starts) == 0 and max(starts) == 70  # every start is reachable, including both ends
    np.testing.assert_array_equal(center_crop(tokens, 30), np.arange(35, 65))
    assert len(center_crop(tokens[:10], 30)) == 10 and len(random_crop(tokens[:10], 30, rng)) == 10


@pytest.mark.parametrize("total,window,stride", [(100, 30, 30), (100, 30, 7), (30, 30, 5), (10, 30, 30), (101, 50, 50)])
def test_sliding_windows_cover_every_position_and_end_at_the_end(total, window, stride):
    starts = window_starts(total, window, stride)
    covered = np.zeros(total, dtype=bool)
    for s in starts:
        covered[s:s + window] = True
    assert covered.all()
    assert starts[0] == 0 and min(starts[-1] + window, total) == total
    assert np.all(np.diff(starts) <= stride)
    tokens = np.arange(total)
    got_starts, windows = sliding_windows(tokens, window, stride)
    np.testing.assert_array_equal(got_starts, starts)
    for s, w in zip(starts, windows):
        np.testing.assert_array_equal(w, tokens[s:s + window])


def test_length_grouped_sampler_is_a_seeded_permutation_that_cuts_padding():
    rng = np.random.default_rng(3)
    lengths = rng.integers(10, 1000, size=2000)
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=7)
    order = list(sampler)
    assert sorted(order) == list(range(2000))
    assert list(LengthGroupedSampler(lengths, batch_size=16, seed=7)) == order  # same seed, same order
    sampler.set_epoch(1)
    assert list(sampler) != order  # a new epoch, a new order

    def padding(indices):
        batches = [lengths[indices[i:i + 16]] for i in range(0, len(indices), 16)]
        return sum(int(b.max() * len(b) - b.sum()) for b in batches)

    shuffled = rng.permutation(2000)
    assert padding(np.array(order)) < 0.1 * padding(shuffled)


def test_epoch_sampler_shuffles_per_epoch_and_tells_the_dataset():
    class Data:
        epoch = None

        def __len__(self):
            return 50

        def set_epoch(self, epoch):
            self.epoch = epoch

    data = Data()
    sampler = EpochSampler(data, seed=3)
    first = list(sampler)
    assert sorted(first) == list(range(50)) and first == list(EpochSampler(data, seed=3))
    sampler.set_epoch(4)
    assert data.epoch == 4 and list(sampler) != first


def test_item_random_is_uniform_and_depends_only_on_its_key():
    from pipelines.data.datasets import ItemRandom

    u = np.array([ItemRandom(0, 0, i).random() for i in range(20000)])
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.std() - 12 ** -0.5) < 0.01 and 0 <= u.min() and u.max() < 1
    k = np.array([ItemRandom(1, 2, i).integers(3, 13) for i in range(20000)])
    counts = np.bincount(k - 3, minlength=10)
    assert k.min() == 3 and k.max() == 12 and np.all(np.abs(counts - 2000) < 250)  # ~5.6 sigma
    assert ItemRandom(4, 5, 6).random() == ItemRandom(4, 5, 6).random()
    assert len({ItemRandom(4, e, 6).random() for e in range(50)}) == 50  # the epoch changes the draw
