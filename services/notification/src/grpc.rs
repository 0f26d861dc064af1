//! ListNotifications over gRPC.

use marquee_kit::time::to_proto;
use marquee_proto::notification::v1 as proto;
use marquee_proto::notification::v1::notification_service_server::NotificationService;
use tonic::{Request, Response, Status};

use crate::domain::{PageSize, PageToken, UserId};
use crate::error::NotificationError;
use crate::store::{NotificationDoc, NotificationStore};

pub struct NotificationApi {
    store: NotificationStore,
}

impl NotificationApi {
    pub fn new(store: NotificationStore) -> Self {
        Self { store }
    }
}

fn render(doc: NotificationDoc) -> proto::Notification {
    proto::Notification {
        sent_at: doc.sent_at().map(to_proto),
        id: doc.id,
        user_id: doc.user_id,
        booking_id: doc.booking_id,
        channel: doc.channel,
        recipient: doc.recipient,
        subject: doc.subject,
        body: doc.body,
        event_id: doc.event_id,
        event_type: doc.event_type,
    }
}

#[tonic::async_trait]
impl NotificationService for NotificationApi {
    #[tracing::instrument(skip_all, fields(user.id = %request.get_ref().user_id))]
    async fn list_notifications(
        &self,
        request: Request<proto::ListNotificationsRequest>,
    ) -> Result<Response<proto::ListNotificationsResponse>, Status> {
        let raw = request.into_inner();
        let user_id = UserId::parse(&raw.user_id).map_err(NotificationError::from)?;
        let page_size = PageSize::parse(raw.page_size).map_err(NotificationError::from)?;
        let after = PageToken::parse(&raw.page_token).map_err(NotificationError::from)?;
        let (docs, next) =
            self.store.list(user_id, page_size, after).await.map_err(NotificationError::from)?;
        Ok(Response::new(proto::ListNotificationsResponse {
            notifications: docs.into_iter().map(render).collect(),
            next_page_token: next.map(PageToken::encode).unwrap_or_default(),
        }))
    }
}
