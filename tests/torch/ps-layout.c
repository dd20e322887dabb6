/*
 * ps-layout.c -- prints the C layout of shoal_ps.h's structures (sizes and
 * every field's offset and size, one "struct.field offset size" a line) so
 * tests/torch/layout.sh can compare it with the Python package's ctypes
 * mirror (python/shoal/_lib.py).  Not for anything else.
 */
#include <stddef.h>
#include <stdio.h>

#include "shoal_ps.h"

#define F(T, S, f) printf("%s.%s %zu %zu\n", S, #f, offsetof(T, f), sizeof(((T *)0)->f))

int main(void)
{
    printf("shoal_ps_job_t.sizeof 0 %zu\n", sizeof(shoal_ps_job_t));
    F(shoal_ps_job_t, "shoal_ps_job_t", workers);
    F(shoal_ps_job_t, "shoal_ps_job_t", mode);
    F(shoal_ps_job_t, "shoal_ps_job_t", staleness);
    F(shoal_ps_job_t, "shoal_ps_job_t", iters_per_epoch);
    F(shoal_ps_job_t, "shoal_ps_job_t", epochs);
    F(shoal_ps_job_t, "shoal_ps_job_t", batch);
    F(shoal_ps_job_t, "shoal_ps_job_t", optimizer);
    F(shoal_ps_job_t, "shoal_ps_job_t", lr);
    F(shoal_ps_job_t, "shoal_ps_job_t", momentum);
    F(shoal_ps_job_t, "shoal_ps_job_t", weight_decay);
    F(shoal_ps_job_t, "shoal_ps_job_t", momentum_auto);
    F(shoal_ps_job_t, "shoal_ps_job_t", beta1);
    F(shoal_ps_job_t, "shoal_ps_job_t", beta2);
    F(shoal_ps_job_t, "shoal_ps_job_t", eps);
    F(shoal_ps_job_t, "shoal_ps_job_t", schedule);
    F(shoal_ps_job_t, "shoal_ps_job_t", step_epochs);
    F(shoal_ps_job_t, "shoal_ps_job_t", gamma);
    F(shoal_ps_job_t, "shoal_ps_job_t", label);
    F(shoal_ps_job_t, "shoal_ps_job_t", compress);
    F(shoal_ps_job_t, "shoal_ps_job_t", topk_ratio);
    printf("shoal_ps_config_t.sizeof 0 %zu\n", sizeof(shoal_ps_config_t));
    F(shoal_ps_config_t, "shoal_ps_config_t", rank);
    F(shoal_ps_config_t, "shoal_ps_config_t", size);
    F(shoal_ps_config_t, "shoal_ps_config_t", local_rank);
    F(shoal_ps_config_t, "shoal_ps_config_t", servers);
    F(shoal_ps_config_t, "shoal_ps_config_t", coordinator);
    F(shoal_ps_config_t, "shoal_ps_config_t", rendezvous);
    F(shoal_ps_config_t, "shoal_ps_config_t", host);
    F(shoal_ps_config_t, "shoal_ps_config_t", connect_timeout_ms);
    F(shoal_ps_config_t, "shoal_ps_config_t", idle_timeout_ms);
    F(shoal_ps_config_t, "shoal_ps_config_t", fail_timeout_ms);
    F(shoal_ps_config_t, "shoal_ps_config_t", rejoin_timeout_ms);
    F(shoal_ps_config_t, "shoal_ps_config_t", reconnect_timeout_ms);
    F(shoal_ps_config_t, "shoal_ps_config_t", checkpoint_dir);
    F(shoal_ps_config_t, "shoal_ps_config_t", checkpoint_every);
    F(shoal_ps_config_t, "shoal_ps_config_t", checkpoint_secs);
    F(shoal_ps_config_t, "shoal_ps_config_t", resume);
    F(shoal_ps_config_t, "shoal_ps_config_t", verify);
    F(shoal_ps_config_t, "shoal_ps_config_t", quiet);
    F(shoal_ps_config_t, "shoal_ps_config_t", colocated);
    F(shoal_ps_config_t, "shoal_ps_config_t", groups);
    F(shoal_ps_config_t, "shoal_ps_config_t", group);
    F(shoal_ps_config_t, "shoal_ps_config_t", group_rank);
    F(shoal_ps_config_t, "shoal_ps_config_t", group_size);
    F(shoal_ps_config_t, "shoal_ps_config_t", job);
    printf("shoal_ps_tensor_t.sizeof 0 %zu\n", sizeof(shoal_ps_tensor_t));
    F(shoal_ps_tensor_t, "shoal_ps_tensor_t", name);
    F(shoal_ps_tensor_t, "shoal_ps_tensor_t", count);
    return 0;
}
