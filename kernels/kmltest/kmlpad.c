// SPDX-License-Identifier: GPL-2.0
/*
 * kmlpad does nothing but take module space: the kernel puts a module in
 * the lowest free range, so kmltest unloaded and loaded again lands where
 * it was, unless kmlpad was loaded in between and took that range (or was
 * unloaded and gave back a lower one). The test moves kmltest's text so
 * that the receiver must read the symbols again to name its call sites.
 */
#include <linux/module.h>

static int __init kmlpad_init(void)
{
	return 0;
}

/* Without an exit function the module could not be unloaded. */
static void __exit kmlpad_exit(void)
{
}

module_init(kmlpad_init);
module_exit(kmlpad_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Takes module space, so that kmltest loaded after it lands elsewhere");
