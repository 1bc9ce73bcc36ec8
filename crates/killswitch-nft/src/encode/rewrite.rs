//! The expressions router mode adds: the statements that rewrite packets, destination NAT to one
//! address (`dnat ip to ADDR`) and the TCP MSS clamp (`tcp option maxseg size set rt mtu`), and
//! the route-type match (`fib daddr type local`), as `nft` 1.0 emits them. The nftnl crate has a `nat` expression but not every attribute the
//! kernel reports back, and no `rt`, `byteorder` or `exthdr` write at all; each attribute the
//! kernel dumps is set here explicitly, so that the read-back of our own batch and the kernel's
//! listing of the installed rule agree (tamper detection compares them).

use killswitch_policy::AddressType;
use nftnl::Rule;
use nftnl::expr::{Cmp, CmpOp, Expression, Immediate, Register};
use nftnl::nftnl_sys as sys;
use std::net::IpAddr;
use std::ptr::NonNull;

/// libnftnl's `NFTNL_EXPR_NAT_*` attributes (`NFTNL_EXPR_BASE` is 1).
const NFTNL_EXPR_NAT_TYPE: u16 = 1;
const NFTNL_EXPR_NAT_FAMILY: u16 = 2;
const NFTNL_EXPR_NAT_REG_ADDR_MIN: u16 = 3;
const NFTNL_EXPR_NAT_REG_ADDR_MAX: u16 = 4;
const NFTNL_EXPR_NAT_FLAGS: u16 = 7;
/// libnftnl's `NFTNL_EXPR_RT_*`.
const NFTNL_EXPR_RT_KEY: u16 = 1;
const NFTNL_EXPR_RT_DREG: u16 = 2;
/// libnftnl's `NFTNL_EXPR_BYTEORDER_*`.
const NFTNL_EXPR_BYTEORDER_DREG: u16 = 1;
const NFTNL_EXPR_BYTEORDER_SREG: u16 = 2;
const NFTNL_EXPR_BYTEORDER_OP: u16 = 3;
const NFTNL_EXPR_BYTEORDER_LEN: u16 = 4;
const NFTNL_EXPR_BYTEORDER_SIZE: u16 = 5;
/// libnftnl's `NFTNL_EXPR_EXTHDR_*`.
const NFTNL_EXPR_EXTHDR_TYPE: u16 = 2;
const NFTNL_EXPR_EXTHDR_OFFSET: u16 = 3;
const NFTNL_EXPR_EXTHDR_LEN: u16 = 4;
const NFTNL_EXPR_EXTHDR_OP: u16 = 6;
const NFTNL_EXPR_EXTHDR_SREG: u16 = 7;

/// libnftnl's `NFTNL_EXPR_FIB_*`.
const NFTNL_EXPR_FIB_DREG: u16 = 1;
const NFTNL_EXPR_FIB_RESULT: u16 = 2;
const NFTNL_EXPR_FIB_FLAGS: u16 = 3;
/// `enum nft_fib_result`'s `NFT_FIB_RESULT_ADDRTYPE`.
const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
/// `enum nft_fib_flags`' `NFTA_FIB_F_DADDR`: look up the destination address.
const NFTA_FIB_F_DADDR: u32 = 1 << 1;

/// `enum nft_nat_types`' `NFT_NAT_DNAT`.
const NFT_NAT_DNAT: u32 = 1;
/// `NF_NAT_RANGE_MAP_IPS`: the kernel sets it itself when an address register is given, and
/// reports it; saying it makes the batch read back as the kernel lists the rule.
const NF_NAT_RANGE_MAP_IPS: u32 = 1;
/// `enum nft_rt_keys`' `NFT_RT_TCPMSS`: the MSS the packet's route allows (its MTU less the IP
/// and TCP headers).
const NFT_RT_TCPMSS: u32 = 3;
/// `enum nft_byteorder_ops`' `NFT_BYTEORDER_HTON`.
const NFT_BYTEORDER_HTON: u32 = 1;
/// `enum nft_exthdr_op`'s `NFT_EXTHDR_OP_TCPOPT`.
const NFT_EXTHDR_OP_TCPOPT: u32 = 1;
/// TCP option kind 2, maximum segment size (RFC 9293): kind, length, then the 2-byte value.
const TCPOPT_MAXSEG: u32 = 2;
const NFT_REG_1: u32 = 1;

/// Allocates a libnftnl expression named `name` (a fresh one: ownership passes to the rule that
/// adds it), or aborts: out of memory for a few dozen bytes leaves nothing sensible to do.
fn alloc(name: &std::ffi::CStr) -> NonNull<sys::nftnl_expr> {
    // SAFETY: nftnl_expr_alloc only reads the NUL-terminated name.
    let expr = unsafe { sys::nftnl_expr_alloc(name.as_ptr()) };
    match NonNull::new(expr) {
        Some(expr) => expr,
        None => std::process::abort(),
    }
}

/// Sets 32-bit attributes of a fresh expression.
fn set_u32(expr: NonNull<sys::nftnl_expr>, attributes: &[(u16, u32)]) {
    for (attribute, value) in attributes {
        // SAFETY: `expr` is a valid expression from `alloc`; the setter copies the integer.
        unsafe { sys::nftnl_expr_set_u32(expr.as_ptr(), *attribute, *value) };
    }
}

/// Adds `dnat ip[6] to ADDR` (same port) to `rule`: the address into register 1, then the `nat`
/// expression reading it.
pub(crate) fn add_dnat(rule: &mut Rule<'_>, to: IpAddr) {
    match to {
        IpAddr::V4(v4) => rule.add_expr(&Immediate::new(v4.octets(), Register::Reg1)),
        IpAddr::V6(v6) => rule.add_expr(&Immediate::new(v6.octets(), Register::Reg1)),
    }
    let family = match to {
        IpAddr::V4(_) => libc::NFPROTO_IPV4,
        IpAddr::V6(_) => libc::NFPROTO_IPV6,
    };
    rule.add_expr(&Dnat {
        family: family as u32,
    });
}

/// Adds `tcp option maxseg size set rt mtu` to `rule`: the route's MSS into register 1, to network
/// byte order, written over the MSS option's value (the kernel leaves a segment without the option
/// as it is, and only ever lowers the value).
pub(crate) fn add_mss_clamp(rule: &mut Rule<'_>) {
    rule.add_expr(&RtTcpMss);
    rule.add_expr(&HostToNetwork16);
    rule.add_expr(&TcpMssWrite);
}

/// Adds `fib daddr type TYPE` to `rule`: the route type of the destination into register 1
/// (host byte order, 4 bytes), compared.
pub(crate) fn add_destination_type(rule: &mut Rule<'_>, kind: AddressType) {
    rule.add_expr(&FibDaddrType);
    rule.add_expr(&Cmp::new(CmpOp::Eq, kind.number().to_ne_bytes().as_slice()));
}

/// `fib daddr type => reg 1`.
struct FibDaddrType;

impl Expression for FibDaddrType {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let expr = alloc(c"fib");
        set_u32(
            expr,
            &[
                (NFTNL_EXPR_FIB_DREG, NFT_REG_1),
                (NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE),
                (NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR),
            ],
        );
        expr
    }
}

/// `nat dnat FAMILY addr_min reg 1 addr_max reg 1 flags 0x1`.
struct Dnat {
    family: u32,
}

impl Expression for Dnat {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let expr = alloc(c"nat");
        set_u32(
            expr,
            &[
                (NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT),
                (NFTNL_EXPR_NAT_FAMILY, self.family),
                (NFTNL_EXPR_NAT_REG_ADDR_MIN, NFT_REG_1),
                // The kernel takes the maximum to be the minimum when it is not given, and
                // reports both.
                (NFTNL_EXPR_NAT_REG_ADDR_MAX, NFT_REG_1),
                (NFTNL_EXPR_NAT_FLAGS, NF_NAT_RANGE_MAP_IPS),
            ],
        );
        expr
    }
}

/// `rt load tcpmss => reg 1`.
struct RtTcpMss;

impl Expression for RtTcpMss {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let expr = alloc(c"rt");
        set_u32(
            expr,
            &[
                (NFTNL_EXPR_RT_KEY, NFT_RT_TCPMSS),
                (NFTNL_EXPR_RT_DREG, NFT_REG_1),
            ],
        );
        expr
    }
}

/// `byteorder reg 1 = hton(reg 1, 2, 2)`.
struct HostToNetwork16;

impl Expression for HostToNetwork16 {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let expr = alloc(c"byteorder");
        set_u32(
            expr,
            &[
                (NFTNL_EXPR_BYTEORDER_SREG, NFT_REG_1),
                (NFTNL_EXPR_BYTEORDER_DREG, NFT_REG_1),
                (NFTNL_EXPR_BYTEORDER_OP, NFT_BYTEORDER_HTON),
                (NFTNL_EXPR_BYTEORDER_LEN, 2),
                (NFTNL_EXPR_BYTEORDER_SIZE, 2),
            ],
        );
        expr
    }
}

/// `exthdr write tcpopt reg 1 => 2b @ 2 + 2`: the 2 bytes at offset 2 of TCP option 2.
struct TcpMssWrite;

impl Expression for TcpMssWrite {
    fn to_expr(&self, _rule: &Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let expr = alloc(c"exthdr");
        set_u32(
            expr,
            &[
                (NFTNL_EXPR_EXTHDR_SREG, NFT_REG_1),
                (NFTNL_EXPR_EXTHDR_TYPE, TCPOPT_MAXSEG),
                (NFTNL_EXPR_EXTHDR_OFFSET, 2),
                (NFTNL_EXPR_EXTHDR_LEN, 2),
                (NFTNL_EXPR_EXTHDR_OP, NFT_EXTHDR_OP_TCPOPT),
                // No flags: the kernel refuses them on a write (EINVAL).
            ],
        );
        expr
    }
}
