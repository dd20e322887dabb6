/*
 * cu.h -- the small amount of glue every CUnit test binary shares: run the
 * registry in verbose basic mode, print CUnit's summary, and turn the
 * result into the process exit status automake expects (0 pass, 1 fail,
 * 77 skipped).
 */
#ifndef SHOAL_TESTS_CU_H
#define SHOAL_TESTS_CU_H

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>

static inline int cu_run_all(void)
{
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    unsigned ran = CU_get_number_of_tests_run();
    CU_cleanup_registry();
    printf("\n");
    if (failed)
        return 1;
    return ran ? 0 : 77;
}

#endif
