// SPDX-License-Identifier: GPL-2.0
/*
 * kmltest leaks kernel memory on purpose, for the kmemleak receiver's tests
 * in the qemu VMs of kernels/vm.sh (TestIntegrationKernelModule...): a
 * real leak in a module, found by its call site, next to memory that lives
 * long without leaking. Load it nowhere else.
 *
 * Every leak_interval_ms a delayed work, in process context:
 *  - kmltest_leak_one: kmallocs LEAK_BYTES (kmalloc-256) and never frees
 *    it while the module is loaded: the leak;
 *  - kmltest_keep_recent: kmallocs RECENT_BYTES (kmalloc-128) and frees the
 *    oldest of the RECENT it keeps: long-lived, bounded, no leak;
 *  - kmltest_cache_one: allocates from the module's own kmem_cache
 *    (cache_name) and frees the oldest of the CACHED it keeps.
 * Unloading frees everything and destroys the cache, so that loading again
 * creates a cache that usually lands at the address the old one had, under
 * another name if cache_name says so. cache_addr shows that address (root
 * only) so the test can tell when it was reused.
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/list.h>
#include <linux/workqueue.h>
#include <linux/jiffies.h>

#define LEAK_BYTES 200
#define RECENT_BYTES 100
#define RECENT 64
#define CACHED_BYTES 72
#define CACHED 32

static unsigned int leak_interval_ms = 500;
module_param(leak_interval_ms, uint, 0444);
MODULE_PARM_DESC(leak_interval_ms, "milliseconds between two leaked objects (and two allocations of each other kind)");

static char *cache_name = "kmltest_cache";
module_param(cache_name, charp, 0444);
MODULE_PARM_DESC(cache_name, "name of the module's own kmem_cache");

static unsigned long cache_addr;
module_param(cache_addr, ulong, 0400);
MODULE_PARM_DESC(cache_addr, "read only: the address of the module's kmem_cache");

struct kmltest_leak {
	struct list_head node;
	char payload[LEAK_BYTES - sizeof(struct list_head)];
};

static LIST_HEAD(leaked);
static void *recent[RECENT];
static unsigned int recent_next;
static struct kmem_cache *cache;
static void *cached[CACHED];
static unsigned int cached_next;

static void kmltest_tick(struct work_struct *work);
static DECLARE_DELAYED_WORK(tick, kmltest_tick);

/*
 * noinline, so that the allocations' call sites are in functions of these
 * names, which the test looks for.
 */
static noinline void kmltest_leak_one(void)
{
	struct kmltest_leak *l = kmalloc(sizeof(*l), GFP_KERNEL);

	if (l)
		list_add(&l->node, &leaked);
}

static noinline void kmltest_keep_recent(void)
{
	void *p = kmalloc(RECENT_BYTES, GFP_KERNEL);

	kfree(recent[recent_next]);
	recent[recent_next] = p;
	recent_next = (recent_next + 1) % RECENT;
}

static noinline void kmltest_cache_one(void)
{
	void *p = kmem_cache_alloc(cache, GFP_KERNEL);

	if (cached[cached_next])
		kmem_cache_free(cache, cached[cached_next]);
	cached[cached_next] = p;
	cached_next = (cached_next + 1) % CACHED;
}

/* The work is the only writer of the state above: no lock. */
static void kmltest_tick(struct work_struct *work)
{
	kmltest_leak_one();
	kmltest_keep_recent();
	kmltest_cache_one();
	schedule_delayed_work(&tick, msecs_to_jiffies(leak_interval_ms));
}

/*
 * A constructor keeps SLUB from merging the cache into an existing one of
 * the same size (which would keep that cache's name and address); 6.1 has
 * no SLAB_NO_MERGE.
 */
static void kmltest_ctor(void *obj)
{
	memset(obj, 0, CACHED_BYTES);
}

static int __init kmltest_init(void)
{
	if (!leak_interval_ms)
		return -EINVAL;
	cache = kmem_cache_create(cache_name, CACHED_BYTES, 0, 0, kmltest_ctor);
	if (!cache)
		return -ENOMEM;
	cache_addr = (unsigned long)cache;
	schedule_delayed_work(&tick, 0);
	return 0;
}

static void __exit kmltest_exit(void)
{
	struct kmltest_leak *l, *next;
	unsigned int i;

	cancel_delayed_work_sync(&tick);
	list_for_each_entry_safe(l, next, &leaked, node)
		kfree(l);
	for (i = 0; i < RECENT; i++)
		kfree(recent[i]);
	for (i = 0; i < CACHED; i++)
		if (cached[i])
			kmem_cache_free(cache, cached[i]);
	kmem_cache_destroy(cache);
}

module_init(kmltest_init);
module_exit(kmltest_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Leaks kmalloc objects on purpose, for the kmemleak receiver's VM tests");
