# SPDX-License-Identifier: Apache-2.0
"""Helpers shared by several test modules.

    sweeps           tiny sweep definitions; readers of what a sweep left in MLflow
    analysis         MLflow data in the sweep layer's contract (fake, trained or from a real sweep)
                     and the tables' statistics computed by hand from it
    crafted          crafted and damaged files for the loaders' tests
    tracking_server  a throwaway PostgreSQL database and an MLflow server on a loopback port
    sockets          the listening TCP sockets of a process tree (ss), loopback or not
"""
