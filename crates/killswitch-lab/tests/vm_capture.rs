//! The VM lab's judge sits on the far side of the guest's link, where the guest's frames arrive as
//! *received*: the capture must tell direction by the guest's MAC address, or every leak would be
//! taken for incoming traffic and pass unseen. Checked here with a veth pair standing in for the
//! guest's NIC and the host's tap.

use killswitch_lab::capture::{Capture, Direction};
use killswitch_lab::netns::{Netns, require_root, veth};
use killswitch_lab::oracle::{Facts, Judgement, judge};
use killswitch_lab::packet::Frame;
use killswitch_lab::vm::GUEST_MAC;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::time::Duration;

#[test]
fn the_peer_capture_takes_the_guests_frames_as_outgoing_and_judges_them() {
    if !require_root("the_peer_capture_takes_the_guests_frames_as_outgoing_and_judges_them") {
        return;
    }
    let guest = Netns::new("vmcap-g").expect("guest namespace");
    let host = Netns::new("vmcap-h").expect("host namespace");
    veth(&guest, "eth0", &host, "tap0").expect("veth");
    let mac = GUEST_MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    guest
        .ip(&["link", "set", "eth0", "address", &mac])
        .expect("guest MAC");
    guest
        .ip(&["addr", "add", "192.168.50.2/24", "dev", "eth0"])
        .expect("guest address");
    guest
        .ip(&["route", "add", "default", "via", "192.168.50.1"])
        .expect("guest route");
    host.ip(&["addr", "add", "192.168.50.1/24", "dev", "tap0"])
        .expect("host address");
    host.ip(&["addr", "add", "203.0.113.10/32", "dev", "lo"])
        .expect("target");
    let capture = Capture::start_for_peer(&host, "tap0", GUEST_MAC).expect("capture");

    // The guest sends to "the internet"; the host answers.
    let target = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
    guest
        .run(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
            socket
                .send_to(b"leak", (target, 9))
                .expect("send from the guest");
        })
        .expect("in the guest namespace");
    let sent = capture
        .wait_for(
            0,
            Duration::from_secs(5),
            |c| matches!(&c.frame, Frame::Ip(ip) if ip.dst == target),
        )
        .expect("the guest's datagram on the link");
    host.run(|| {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        socket
            .send_to(b"reply", ("192.168.50.2", 9))
            .expect("send from the host");
    })
    .expect("in the host namespace");
    let answered = capture
        .wait_for(0, Duration::from_secs(5), |c| {
            matches!(&c.frame, Frame::Ip(ip) if ip.dst == IpAddr::V4(Ipv4Addr::new(192, 168, 50, 2)))
        })
        .expect("the host's datagram on the link");

    let frames = capture.frames();
    assert_eq!(frames[sent].direction, Direction::Outgoing);
    assert_eq!(frames[answered].direction, Direction::Incoming);
    let facts = Facts {
        endpoints: &[],
        tunnel_addresses: &[],
        lan_allowed: false,
    };
    assert!(
        matches!(judge(&frames[sent], &facts), Some(Judgement::Leak(_))),
        "the guest's datagram to the internet is a leak"
    );
    assert_eq!(judge(&frames[answered], &facts), None);
    assert_eq!(capture.kernel_drops().expect("statistics"), 0);
}
