/*
 * The kernel headers pfsyncd reads with bindgen (see build.rs): the pfsync wire
 * structures, the pf state ioctls and bpf. Built for the target OS on a BSD, and for
 * both OSes from the header copies of the ziglang wheel for the test oracle on Linux.
 */
/* First: on FreeBSD it defines __FreeBSD_version, which the headers test (the ziglang
 * copy leaves that to the compiler; build.rs passes -D__FreeBSD_version then). */
#include <sys/param.h>
#include <sys/types.h>
#include <sys/socket.h>
/* The DIOC and BIOC ioctl numbers are _IOWR(...) macros from sys/ioccom.h. */
#include <sys/ioctl.h>
#include <net/if.h>
#include <netinet/in.h>

#if defined(__OpenBSD__)
/* OpenBSD's net/if_pfsync.h uses union sockaddr_union without including its header. */
#include <netinet/ip_ipsp.h>
#elif !defined(__FreeBSD__)
#error "pfsyncd: wrapper.h is for FreeBSD and OpenBSD headers only"
#endif

#include <net/pfvar.h>
#include <net/if_pfsync.h>
#include <net/bpf.h>

#if defined(__FreeBSD__)
/* FreeBSD 14/15 list states through pf's generic netlink family. 13.0 and 13.1 have no
 * netlink headers, and only 15 installs pf_nl.h (pfsyncd carries its numbers itself);
 * build.rs supplies what the socket needs when they are missing. */
#if __has_include(<netlink/netlink.h>)
#include <netlink/netlink.h>
#include <netlink/netlink_generic.h>
#endif
#if __has_include(<netpfil/pf/pf_nl.h>)
#include <netpfil/pf/pf_nl.h>
#endif
#endif
