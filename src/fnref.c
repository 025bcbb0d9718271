/*
 * fnref.c -- functions that cross a process boundary safely.
 *
 * A task function travels as (module, build-id, offset): the module is the
 * shared object that holds it ("" for the main program), the build-id is
 * the GNU build-id note of that module, and the offset is from the module's
 * load address (so ASLR does not matter).  The receiving process accepts it
 * only if a loaded module of that name has the same build-id and the
 * offset falls inside one of its executable segments: a worker never jumps
 * to an address read off the wire without that check.
 */
#include "fnref.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The GNU build-id note of a loaded module, if it has one. */
static void find_build_id(const struct dl_phdr_info *info, const uint8_t **id,
                          size_t *len)
{
    *id = NULL;
    *len = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_NOTE)
            continue;
        const unsigned char *p =
            (const unsigned char *)(info->dlpi_addr + ph->p_vaddr);
        const unsigned char *end = p + ph->p_memsz;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            size_t name_sz = (nh->n_namesz + 3u) & ~3u;
            size_t desc_sz = (nh->n_descsz + 3u) & ~3u;
            const unsigned char *name = p + sizeof *nh;
            const unsigned char *desc = name + name_sz;
            if (desc + desc_sz > end)
                break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 &&
                memcmp(name, "GNU", 4) == 0 && nh->n_descsz <= 64) {
                *id = desc;
                *len = nh->n_descsz;
                return;
            }
            p = desc + desc_sz;
        }
    }
}

static bool in_exec_segment(const struct dl_phdr_info *info, uintptr_t off)
{
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) &&
            off >= ph->p_vaddr && off - ph->p_vaddr < ph->p_memsz)
            return true;
    }
    return false;
}

typedef struct make_ctx {
    uintptr_t addr;
    cf_fnref *out;
    bool found;
} make_ctx;

static int make_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    make_ctx *m = arg;
    if (m->addr < info->dlpi_addr ||
        !in_exec_segment(info, m->addr - info->dlpi_addr))
        return 0;
    m->out->module = info->dlpi_name ? info->dlpi_name : "";
    m->out->module_len = strlen(m->out->module);
    m->out->offset = m->addr - info->dlpi_addr;
    find_build_id(info, &m->out->build_id, &m->out->build_id_len);
    m->found = true;
    return 1;
}

int cf__fnref_make(cf_task_fn fn, cf_fnref *out)
{
    make_ctx m = {.addr = (uintptr_t)fn, .out = out};
    dl_iterate_phdr(make_cb, &m);
    return m.found ? CF_OK : CF_EINVAL;
}

typedef struct resolve_ctx {
    const cf_fnref *ref;
    uintptr_t addr;
    int why; /* 0 not found, 1 build-id differs, 2 not executable, 3 ok */
} resolve_ctx;

static int resolve_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    resolve_ctx *r = arg;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    if (strlen(name) != r->ref->module_len ||
        memcmp(name, r->ref->module, r->ref->module_len) != 0)
        return 0;
    const uint8_t *id;
    size_t len;
    find_build_id(info, &id, &len);
    if (len != r->ref->build_id_len ||
        (len > 0 && memcmp(id, r->ref->build_id, len) != 0)) {
        r->why = 1;
        return 0; /* maybe another module of the same name matches */
    }
    if (!in_exec_segment(info, (uintptr_t)r->ref->offset)) {
        r->why = 2;
        return 1;
    }
    r->addr = info->dlpi_addr + (uintptr_t)r->ref->offset;
    r->why = 3;
    return 1;
}

int cf__fnref_resolve(const cf_fnref *ref, cf_task_fn *fn, char *err,
                      size_t errlen)
{
    resolve_ctx r = {.ref = ref};
    dl_iterate_phdr(resolve_cb, &r);
    if (r.why == 0 && ref->module_len > 0 && ref->module_len < 4096) {
        /* A module the parent had loaded (dlopen) and we have not. */
        char path[4096];
        memcpy(path, ref->module, ref->module_len);
        path[ref->module_len] = '\0';
        if (dlopen(path, RTLD_NOW | RTLD_NOLOAD) == NULL &&
            dlopen(path, RTLD_NOW) != NULL)
            dl_iterate_phdr(resolve_cb, &r);
    }
    static const char *why[] = {
        "its module is not loaded in the worker",
        "its module's build-id differs in the worker",
        "its offset is not in an executable segment",
    };
    if (r.why != 3) {
        snprintf(err, errlen, "refused function %.*s+0x%llx: %s",
                 (int)(ref->module_len ? ref->module_len : 6),
                 ref->module_len ? ref->module : "<main>",
                 (unsigned long long)ref->offset, why[r.why]);
        return CF_EINVAL;
    }
    *fn = (cf_task_fn)r.addr;
    return CF_OK;
}

/* Looks up the function symbol that contains `off` in the .symtab of the
 * ELF file at path (static functions are not in the dynamic symbol table
 * that dladdr reads).  Reads the file with pread: no mapping, no cache. */
static bool symtab_name(const char *path, uintptr_t off, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool found = false;
    ElfW(Shdr) *sh = NULL;
    ElfW(Sym) *syms = NULL;
    ElfW(Ehdr) eh;
    if (pread(fd, &eh, sizeof eh, 0) != (ssize_t)sizeof eh ||
        memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 ||
        eh.e_shentsize != sizeof(ElfW(Shdr)) || eh.e_shnum == 0 ||
        eh.e_shnum > 4096)
        goto out;
    size_t shbytes = eh.e_shnum * sizeof *sh;
    sh = malloc(shbytes);
    if (sh == NULL ||
        pread(fd, sh, shbytes, (off_t)eh.e_shoff) != (ssize_t)shbytes)
        goto out;
    for (int i = 0; i < eh.e_shnum && !found; i++) {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh.e_shnum ||
            sh[i].sh_size > (64u << 20))
            continue;
        const ElfW(Shdr) *str = &sh[sh[i].sh_link];
        size_t n = sh[i].sh_size / sizeof(ElfW(Sym));
        free(syms);
        syms = malloc(n * sizeof *syms + 1);
        if (syms == NULL ||
            pread(fd, syms, n * sizeof *syms, (off_t)sh[i].sh_offset) !=
                (ssize_t)(n * sizeof *syms))
            break;
        for (size_t k = 0; k < n; k++) {
            const ElfW(Sym) *sym = &syms[k];
            if (ELF64_ST_TYPE(sym->st_info) != STT_FUNC || sym->st_value == 0 ||
                off < sym->st_value ||
                off >= sym->st_value + (sym->st_size ? sym->st_size : 1))
                continue;
            ssize_t got = pread(fd, buf, len - 1,
                                (off_t)(str->sh_offset + sym->st_name));
            if (got <= 0)
                break;
            buf[got] = '\0';
            found = buf[0] != '\0';
            break;
        }
    }
out:
    free(sh);
    free(syms);
    close(fd);
    return found;
}

const char *cf__fn_name(cf_task_fn fn, char *buf, size_t len)
{
    Dl_info info;
    if (dladdr((void *)fn, &info) && info.dli_sname != NULL &&
        (uintptr_t)info.dli_saddr == (uintptr_t)fn) {
        snprintf(buf, len, "%s", info.dli_sname);
        return buf;
    }
    cf_fnref ref;
    if (cf__fnref_make(fn, &ref) == CF_OK) {
        const char *path = ref.module_len ? ref.module : "/proc/self/exe";
        if (symtab_name(path, (uintptr_t)ref.offset, buf, len))
            return buf;
        snprintf(buf, len, "%s+0x%llx", ref.module_len ? ref.module : "<main>",
                 (unsigned long long)ref.offset);
        return buf;
    }
    snprintf(buf, len, "%p", (void *)fn);
    return buf;
}
