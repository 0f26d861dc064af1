//! Marquee's wire contracts: the gRPC services and the RabbitMQ event messages,
//! generated from `proto/marquee/*.proto` at build time.
//!
//! Modules mirror the proto packages minus the `marquee` prefix
//! (`marquee.cinema.v1` is `cinema::v1`), which is what prost's relative paths expect.

pub mod common {
    pub mod v1 {
        tonic::include_proto!("marquee.common.v1");
    }
}
pub mod user {
    pub mod v1 {
        tonic::include_proto!("marquee.user.v1");
    }
}
pub mod cinema {
    pub mod v1 {
        tonic::include_proto!("marquee.cinema.v1");
    }
}
pub mod payment {
    pub mod v1 {
        tonic::include_proto!("marquee.payment.v1");
    }
}
pub mod booking {
    pub mod v1 {
        tonic::include_proto!("marquee.booking.v1");
    }
}
pub mod notification {
    pub mod v1 {
        tonic::include_proto!("marquee.notification.v1");
    }
}
pub mod ticket {
    pub mod v1 {
        tonic::include_proto!("marquee.ticket.v1");
    }
}
pub mod events {
    pub mod v1 {
        tonic::include_proto!("marquee.events.v1");
    }
}

/// Encoded `FileDescriptorSet` of every Marquee proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/marquee_descriptor.bin"));
