include $(sort $(wildcard $(BR2_EXTERNAL_FERROCLONE_PATH)/package/*/*.mk))
