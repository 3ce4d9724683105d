// Tests run against the same local etcd cluster the demo and the bench start.
export { LocalEtcdCluster as EtcdCluster, type EtcdMember } from '../../services/etcd-local';
