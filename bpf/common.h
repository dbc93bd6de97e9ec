/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Small devices every part of the program uses. Each says what it is for:
 * a load for concurrency is not a load for the verifier.
 */
#ifndef HBF_COMMON_H
#define HBF_COMMON_H

#include <linux/types.h>

#define EEXIST 17

/* A load the compiler may not replace with a value it already holds: for
 * what another CPU or the daemon may change meanwhile. */
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

/* forget_bounds reads x back from memory (a map value), so the verifier
 * treats it as unknown instead of carrying what it learnt of it in earlier
 * branches: what one phase of a function learnt then does not multiply the
 * states the verifier explores in the next. The same load as READ_ONCE, for
 * another reason. */
#define forget_bounds(x) (*(volatile typeof(x) *)&(x))

#define NSEC_PER_SEC 1000000000ULL

#endif
