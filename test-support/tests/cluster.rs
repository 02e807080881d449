//! The local Redis Cluster forms, knows who owns a slot, and fails over on request.

use test_support::RedisCluster;

#[test]
fn a_cluster_forms_and_a_replica_takes_over_its_primarys_slots() {
    let cluster = RedisCluster::start();
    assert_eq!(cluster.urls().len(), 6);
    assert_eq!(cluster.seed_url(), cluster.urls()[0]);
    let key = "{airmy:inbox:}stream";
    assert_eq!(cluster.slot(key), cluster.slot("{airmy:inbox:}e:evt_1"));
    let (primary, replica) = (cluster.primary_of(key), cluster.replica_of(key));
    assert_ne!(primary, replica);
    assert_eq!(cluster.failover(key), replica);
    assert_eq!(cluster.primary_of(key), replica);
    assert_eq!(cluster.replica_of(key), primary);
}

#[test]
fn a_slot_moves_with_its_keys() {
    let cluster = RedisCluster::start();
    let key = "{airmy:inbox:}stream";
    let from = cluster.primary_of(key);
    let to = *cluster
        .primaries()
        .iter()
        .find(|p| **p != from)
        .expect("another primary");
    cluster.migrate(key, to);
    assert_eq!(cluster.primary_of(key), to);
}
