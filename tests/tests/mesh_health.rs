//! Every gRPC service answers the standard health check and lists itself over
//! server reflection; the gateway reports ready once they all do.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use marquee_e2e::{Mesh, Service};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_is_serving_and_reflects_its_api() {
    let mesh = Mesh::start().await.unwrap();
    let expected = [
        (Service::User, "marquee.user.v1.UserService"),
        (Service::Cinema, "marquee.cinema.v1.CinemaService"),
        (Service::Payment, "marquee.payment.v1.PaymentService"),
        (Service::Booking, "marquee.booking.v1.BookingService"),
        (Service::Ticket, "marquee.ticket.v1.TicketService"),
        (Service::Notification, "marquee.notification.v1.NotificationService"),
    ];
    for (name, service) in expected {
        let channel = tonic::transport::Endpoint::from_shared(mesh.url(name).unwrap())
            .unwrap()
            .connect()
            .await
            .unwrap();

        let health = HealthClient::new(channel.clone())
            .check(HealthCheckRequest { service: service.to_owned() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(health.status(), ServingStatus::Serving, "{name}");

        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("{name}: unexpected reflection reply {reply:?}");
        };
        let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&service), "{name} reflects {names:?}");
        assert!(names.contains(&"grpc.health.v1.Health"), "{name} reflects {names:?}");
    }

    let ready = reqwest::get(format!("{}/readyz", mesh.url(Service::Gateway).unwrap())).await.unwrap();
    assert_eq!(ready.status(), 200);
}
