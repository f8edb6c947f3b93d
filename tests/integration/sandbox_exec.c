/*
 * sandbox_exec: runs a program under two of the seccomp filters that systemd installs for
 * deploy/systemd/portico.service, so that tests/integration/test_deploy.py can see Portico working
 * inside them on a machine without systemd as PID 1:
 *
 *   RestrictAddressFamilies=F...   socket() with another family fails with EAFNOSUPPORT
 *   MemoryDenyWriteExecute=yes     mmap() asking for PROT_WRITE|PROT_EXEC, and mprotect() or
 *                                  pkey_mprotect() asking for PROT_EXEC, fail with EPERM
 *
 *   sandbox_exec FAMILY_NUMBER... -- PROGRAM [ARG...]
 *
 * x86_64 only (the filter checks the architecture and kills anything else). Compiled by the test.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>

#define NR offsetof(struct seccomp_data, nr)
#define ARG(n) offsetof(struct seccomp_data, args[n])
#define MAX_INSNS 256

static struct sock_filter prog[MAX_INSNS];
static size_t n;

static void emit(struct sock_filter insn)
{
    if (n == MAX_INSNS) {
        fprintf(stderr, "sandbox_exec: too many families\n");
        exit(2);
    }
    prog[n++] = insn;
}

int main(int argc, char **argv)
{
    int sep = 1;
    while (sep < argc && strcmp(argv[sep], "--") != 0)
        sep++;
    if (sep >= argc - 1) {
        fprintf(stderr, "usage: sandbox_exec FAMILY... -- PROGRAM [ARG...]\n");
        return 2;
    }
    int nfam = sep - 1;

    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS));

    /* socket(family, ...): allowed families pass, the others get EAFNOSUPPORT */
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_socket, 0, (unsigned char)(nfam + 2)));
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG(0)));
    for (int i = 0; i < nfam; i++)
        emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)atoi(argv[1 + i]),
                                          (unsigned char)(nfam - i), 0));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EAFNOSUPPORT));

    /* mmap(addr, len, prot, ...): PROT_WRITE and PROT_EXEC together → EPERM */
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 0, 4));
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG(2)));
    emit((struct sock_filter)BPF_STMT(BPF_ALU | BPF_AND | BPF_K, PROT_WRITE | PROT_EXEC));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROT_WRITE | PROT_EXEC, 0, 1));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));

    /* mprotect / pkey_mprotect(addr, len, prot): PROT_EXEC → EPERM */
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, NR));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 1, 0));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_pkey_mprotect, 0, 3));
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG(2)));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 0, 1));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM));

    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));

    struct sock_fprog fprog = {(unsigned short)n, prog};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) != 0) {
        perror("sandbox_exec: seccomp");
        return 2;
    }
    execv(argv[sep + 1], argv + sep + 1);
    perror("sandbox_exec: exec");
    return 127;
}
