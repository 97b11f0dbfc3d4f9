//! Request and response codes (rocketmq-remoting.md section 2).
//!
//! Both are open enums: a value this crate does not know is kept as `Unknown(n)` so it can be
//! logged and answered (`REQUEST_CODE_NOT_SUPPORTED`) instead of failing the frame.

macro_rules! open_code_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $value:expr,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $(
                #[allow(missing_docs)]
                $variant,
            )*
            /// A code this crate has no name for; the number is kept.
            Unknown(i32),
        }

        impl $name {
            /// The number on the wire.
            pub fn value(self) -> i32 {
                match self {
                    $(Self::$variant => $value,)*
                    Self::Unknown(v) => v,
                }
            }
        }

        impl From<i32> for $name {
            fn from(v: i32) -> Self {
                match v {
                    $(x if x == $value => Self::$variant,)*
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for i32 {
            fn from(c: $name) -> i32 {
                c.value()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                match self {
                    Self::Unknown(v) => write!(f, "{v}"),
                    other => write!(f, "{other:?}({})", other.value()),
                }
            }
        }
    };
}

open_code_enum! {
    /// Request codes a consumer, the test producer and the topic tool send or receive.
    RequestCode {
        SendMessage = 10,
        PullMessage = 11,
        QueryConsumerOffset = 14,
        UpdateConsumerOffset = 15,
        UpdateAndCreateTopic = 17,
        SearchOffsetByTimestamp = 29,
        GetMaxOffset = 30,
        GetMinOffset = 31,
        GetEarliestMsgStoreTime = 32,
        HeartBeat = 34,
        UnregisterClient = 35,
        ConsumerSendMsgBack = 36,
        GetConsumerListByGroup = 38,
        CheckTransactionState = 39,
        NotifyConsumerIdsChanged = 40,
        LockBatchMq = 41,
        UnlockBatchMq = 42,
        CheckClientConfig = 46,
        GetRouteInfoByTopic = 105,
        GetBrokerClusterInfo = 106,
        ResetConsumerClientOffset = 220,
        GetConsumerStatusFromClient = 221,
        InvokeBrokerToResetOffset = 222,
        GetConsumerRunningInfo = 307,
        ConsumeMessageDirectly = 309,
        SendMessageV2 = 310,
        SendBatchMessage = 320,
        PushReplyMessageToClient = 326,
    }
}

open_code_enum! {
    /// Response codes a consumer must understand.
    ResponseCode {
        Success = 0,
        SystemError = 1,
        SystemBusy = 2,
        RequestCodeNotSupported = 3,
        TransactionFailed = 4,
        FlushDiskTimeout = 10,
        SlaveNotAvailable = 11,
        FlushSlaveTimeout = 12,
        MessageIllegal = 13,
        ServiceNotAvailable = 14,
        VersionNotSupported = 15,
        NoPermission = 16,
        TopicNotExist = 17,
        TopicExistAlready = 18,
        PullNotFound = 19,
        PullRetryImmediately = 20,
        PullOffsetMoved = 21,
        QueryNotFound = 22,
        SubscriptionParseFailed = 23,
        SubscriptionNotExist = 24,
        SubscriptionNotLatest = 25,
        SubscriptionGroupNotExist = 26,
        FilterDataNotExist = 27,
        FilterDataNotLatest = 28,
        InvalidParameter = 29,
        ConsumerNotOnline = 206,
        ConsumeMsgTimeout = 207,
        NoMessage = 208,
        FlowControl = 215,
        NotLeaderForQueue = 501,
        GoAway = 1500,
    }
}

impl ResponseCode {
    /// Whether a call that failed with this code may succeed when simply tried again later.
    ///
    /// Unknown codes count as retriable: newer brokers add codes (rocketmq-remoting.md section 10)
    /// and a consumer must keep going rather than give up on a queue. `NO_PERMISSION` stays
    /// retriable as in Java, whose producer retries it (`DefaultMQProducer.retryResponseCodes`)
    /// and whose consumer pulls again later: permissions change at runtime (a broker set
    /// read-only for maintenance, ACLs updated).
    pub fn is_retriable(self) -> bool {
        !matches!(
            self,
            Self::RequestCodeNotSupported
                | Self::VersionNotSupported
                | Self::MessageIllegal
                | Self::SubscriptionParseFailed
                | Self::TopicExistAlready
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_codes_are_kept() {
        assert_eq!(RequestCode::from(105), RequestCode::GetRouteInfoByTopic);
        assert_eq!(RequestCode::from(99_999), RequestCode::Unknown(99_999));
        assert_eq!(RequestCode::Unknown(99_999).value(), 99_999);
        assert_eq!(ResponseCode::from(-3), ResponseCode::Unknown(-3));
        assert_eq!(i32::from(ResponseCode::PullOffsetMoved), 21);
    }
}
