// Package tmpfs counts the files tmpfs mounts hold. The objects of
// shmem_inode_cache are one per tmpfs file (and per SysV shared memory
// segment or memfd), kept while the file exists: files a service keeps in
// /run or /dev/shm explain its growth.
package tmpfs

// Cache is the slab cache of tmpfs inodes.
const Cache = "shmem_inode_cache"
