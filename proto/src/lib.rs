pub use k8s_cri::v1;
