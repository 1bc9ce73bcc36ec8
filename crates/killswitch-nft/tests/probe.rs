use killswitch_lab::netns::{Netns, require_root};
use killswitch_policy::{compile, PolicyState, Peer, Tunnel, Settings};

#[test]
fn probe() {
    if !require_root("probe") { return; }
    let ns = Netns::new("probe").unwrap();
    let state = PolicyState::Connected {
        peer: Peer { endpoint: "198.51.100.1:51820".parse().unwrap(), mark: killswitch_types::Fwmark::new(0xca6c), uid: Some(0) },
        tunnel: Tunnel { interface: "wg0".parse().unwrap(), addresses: vec!["10.64.0.2".parse().unwrap()], dns: vec!["10.64.0.1".parse().unwrap()] },
    };
    let rs = compile(&state, &Settings { lockdown: false, allow_lan: true });
    let r = ns.run(|| killswitch_nft::apply(&rs)).unwrap();
    println!("{r:?}");
    r.unwrap();
    println!("{}", ns.exec("nft", &["list", "table", "inet", "killswitch"]).unwrap());
    let inst = ns.run(|| killswitch_nft::installed()).unwrap().unwrap().unwrap();
    println!("{}", inst);
}
