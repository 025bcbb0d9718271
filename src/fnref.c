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
#include <pthread.h>
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

/*
 * A module that was dlopen'ed by a relative path ("./plug/libtask.so") is
 * named by that path in the loader's list, which means nothing to a worker
 * started after the program changed directory.  Such names are sent as the
 * absolute path of the file the kernel mapped (/proc/self/maps), looked up
 * once per module and kept for the life of the process (a few bytes each).
 */
typedef struct abs_name {
    struct abs_name *next;
    uintptr_t base;  /* the module's load address */
    const char *rel; /* the loader's name for it */
    char path[];
} abs_name;

static pthread_mutex_t abs_lock = PTHREAD_MUTEX_INITIALIZER;
static abs_name *abs_names;

/* The path of the file mapped at addr, from /proc/self/maps. */
bool cf__mapped_path(uintptr_t addr, char *out, size_t len)
{
    FILE *maps = fopen("/proc/self/maps", "re");
    if (maps == NULL)
        return false;
    bool found = false;
    char line[4096 + 128];
    while (!found && fgets(line, sizeof line, maps) != NULL) {
        unsigned long lo, hi;
        int path_at = 0;
        if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &path_at) <
                2 ||
            path_at == 0 || addr < lo || addr >= hi || line[path_at] != '/')
            continue;
        char *nl = strchr(line + path_at, '\n');
        if (nl != NULL)
            *nl = '\0';
        found = snprintf(out, len, "%s", line + path_at) < (int)len;
    }
    fclose(maps);
    return found;
}

/* The name to send for a module: its loader name if that is absolute (or
 * empty: the main program), else its absolute path (NULL if unknown). */
static const char *module_name(const struct dl_phdr_info *info)
{
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    if (name[0] == '\0' || name[0] == '/')
        return name;
    uintptr_t first = 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_LOAD) {
            first = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
            break;
        }
    pthread_mutex_lock(&abs_lock);
    const char *found = NULL;
    for (abs_name *a = abs_names; a != NULL && found == NULL; a = a->next)
        if (a->base == info->dlpi_addr && strcmp(a->rel, name) == 0)
            found = a->path;
    char path[4096];
    if (found == NULL && cf__mapped_path(first, path, sizeof path)) {
        size_t n = strlen(path) + 1;
        abs_name *a = malloc(sizeof *a + n);
        if (a != NULL) {
            a->base = info->dlpi_addr;
            a->rel = name;
            memcpy(a->path, path, n);
            a->next = abs_names;
            abs_names = a;
            found = a->path;
        }
    }
    pthread_mutex_unlock(&abs_lock);
    return found != NULL ? found : name;
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
    m->out->module = module_name(info);
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
    const uint8_t *id;
    size_t len;
    find_build_id(info, &id, &len);
    bool same_id = len > 0 && len == r->ref->build_id_len &&
                   memcmp(id, r->ref->build_id, len) == 0;
    bool same_name = strlen(name) == r->ref->module_len &&
                     memcmp(name, r->ref->module, r->ref->module_len) == 0;
    /* A build-id names the file's contents, whatever path loaded it here
     * (the worker may know the module by another, relative, name); the
     * main program ("") only ever matches the main program. */
    if (same_id && (name[0] == '\0') != (r->ref->module_len == 0))
        same_id = false;
    if (!same_id && !same_name)
        return 0;
    if (!same_id && (len > 0 || r->ref->build_id_len > 0)) {
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
    char loaderr[512] = "";
    if (r.why == 0 && ref->module_len > 0 && ref->module_len < 4096) {
        /* A module the parent had loaded (dlopen) and we have not. */
        char path[4096];
        memcpy(path, ref->module, ref->module_len);
        path[ref->module_len] = '\0';
        if (dlopen(path, RTLD_NOW | RTLD_NOLOAD) == NULL) {
            if (dlopen(path, RTLD_NOW) != NULL) {
                dl_iterate_phdr(resolve_cb, &r);
            } else {
                const char *e = dlerror();
                snprintf(loaderr, sizeof loaderr, " (dlopen: %s)",
                         e ? e : "failed");
            }
        }
    }
    static const char *why[] = {
        ("its module is not loaded in the worker and could not be loaded "
         "from that path"),
        "its module's build-id differs in the worker",
        "its offset is not in an executable segment",
    };
    if (r.why != 3) {
        snprintf(err, errlen, "refused function %.*s+0x%llx: %s%s",
                 (int)(ref->module_len ? ref->module_len : 6),
                 ref->module_len ? ref->module : "<main>",
                 (unsigned long long)ref->offset, why[r.why], loaderr);
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
