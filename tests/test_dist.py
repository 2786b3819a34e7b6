"""effnet.dist without Horovod: the caller chooses the ranks; a single process's collectives are identities.

Several Horovod ranks are tested by tests/test_horovod.py (horovodrun, 2 Gloo ranks).
"""
from __future__ import annotations

import tensorflow as tf

from effnet import dist


def test_launched_ranks_reads_only_the_mapping_it_is_given():
    assert dist.launched_ranks({}) == 1
    assert dist.launched_ranks({"HOROVOD_SIZE": "4", "PMI_SIZE": "2"}) == 4
    assert dist.launched_ranks({"OMPI_COMM_WORLD_SIZE": "2"}) == 2
    assert dist.launched_ranks({"PMI_SIZE": "8", "LOCAL_RANK": "3"}) == 8


def test_init_without_horovod_is_one_process_whatever_the_environment(monkeypatch):
    monkeypatch.setenv("HOROVOD_SIZE", "4")   # not consulted: the entry point decides
    ranks = dist.init(horovod=False)
    assert dist.current() is ranks
    assert (ranks.active, ranks.rank, ranks.size, ranks.local_rank) == (False, 0, 1, 0)
    assert (dist.active(), dist.rank(), dist.size(), dist.local_rank()) == (False, 0, 1, 0)
    assert dist.batch_norm_allreduce() is None   # build_model then uses plain Keras BatchNorm


def test_single_process_collectives_are_identities():
    ranks = dist.Ranks()
    value = tf.constant([1.0, 2.0])
    grads = [value, None]
    assert ranks.allreduce_gradients(grads) == grads
    assert ranks.allreduce_mean(value) is value and ranks.allreduce_sum(value, "x") is value
    assert ranks.allgather(value) is value
    variable = tf.Variable(3.0)
    ranks.broadcast_variables([variable])
    ranks.barrier()
    assert float(variable) == 3.0
