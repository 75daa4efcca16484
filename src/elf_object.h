/* Internal: a loaded ELF object's build-id and code segments, for the
 * function references of fnref.c (spawn, forkserver) and mpi_fnref.c (MPI
 * ranks).  Header-only on purpose: libmproc_mpi links the shared core,
 * whose internal symbols are hidden, so each compiles its own copy of these
 * few lines from this one source. */
#ifndef MPROC_SRC_ELF_OBJECT_H
#define MPROC_SRC_ELF_OBJECT_H

#include <elf.h>
#include <link.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Longest build-id kept (GNU ld's are 16 or 20 bytes). */
#define MPROC__BUILD_ID_MAX 64

/* Copies the object's build-id from its PT_NOTE segments; returns its length
 * (0 when there is none). */
static inline uint32_t mproc__build_id_of(const struct dl_phdr_info *info, uint8_t *out) {
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type != PT_NOTE)
      continue;
    const char *p = (const char *)(info->dlpi_addr + ph->p_vaddr);
    const char *end = p + ph->p_memsz;
    while ((size_t)(end - p) >= sizeof(ElfW(Nhdr))) {
      ElfW(Nhdr) nh;
      memcpy(&nh, p, sizeof nh);
      size_t namesz = (nh.n_namesz + 3u) & ~3u, descsz = (nh.n_descsz + 3u) & ~3u;
      const char *name = p + sizeof nh, *desc = name + namesz;
      if (namesz > (size_t)(end - name) || descsz > (size_t)(end - desc))
        break;
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && memcmp(name, "GNU", 4) == 0 &&
          nh.n_descsz > 0 && nh.n_descsz <= MPROC__BUILD_ID_MAX) {
        memcpy(out, desc, nh.n_descsz);
        return nh.n_descsz;
      }
      p = desc + descsz;
    }
  }
  return 0;
}

/* The executable PT_LOAD segment of the object that holds `off` (an offset
 * from its load base), if any. */
static inline bool mproc__in_code(const struct dl_phdr_info *info, uint64_t off) {
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && off >= ph->p_vaddr &&
        off - ph->p_vaddr < ph->p_memsz)
      return true;
  }
  return false;
}

#endif /* MPROC_SRC_ELF_OBJECT_H */
