"""Atomic outputs: the one mechanism every writer uses to make an output appear whole or not at all.

* :mod:`~pose2rgbd.atomic.siblings`: the hidden siblings a writer creates (``.<name>.partial-<pid>-...``,
  ``.tmp-``, ``.old-``), and the sweep that deals with a killed run's: removes what was never put in place,
  puts back an earlier output whose replacement never arrived;
* :mod:`~pose2rgbd.atomic.swap`: :func:`swap_in` (fsync, rename aside and into place, undo on any failure,
  markers for the recovery), :func:`move_together`, :class:`StagedOutputs` (outputs that change together),
  :func:`write_text_atomic`, what an interrupted command kept (:func:`note_kept`);
* :mod:`~pose2rgbd.atomic.signals`: Ctrl-C and SIGTERM held across a swap in every thread of the process, and kept
  Python's across the import of a native library that installs its own (:func:`handlers_kept`);
* :mod:`~pose2rgbd.atomic.oserrors`: one-line messages for disk-full / read-only / permission errors.

The overwrite policy (an existing output is replaced only with ``--overwrite``) is
:func:`pose2rgbd.output_guard.refuse_existing`.
"""

from pose2rgbd.atomic.oserrors import OS_ERRORS, os_error_message
from pose2rgbd.atomic.siblings import (
    SIBLING_KINDS,
    make_temp_dir,
    output_of,
    pid_alive,
    sibling_prefix,
    stale_siblings,
    sweep_stale_siblings,
)
from pose2rgbd.atomic.signals import handlers_kept, signal_deferral, signals_held
from pose2rgbd.atomic.swap import (
    StagedOutputs,
    atomic_file,
    fsync_tree,
    move_together,
    note_kept,
    swap_in,
    take_kept,
    write_text_atomic,
)

__all__ = [
    "OS_ERRORS",
    "SIBLING_KINDS",
    "StagedOutputs",
    "atomic_file",
    "fsync_tree",
    "handlers_kept",
    "make_temp_dir",
    "move_together",
    "note_kept",
    "os_error_message",
    "output_of",
    "pid_alive",
    "sibling_prefix",
    "signal_deferral",
    "signals_held",
    "stale_siblings",
    "swap_in",
    "sweep_stale_siblings",
    "take_kept",
    "write_text_atomic",
]
