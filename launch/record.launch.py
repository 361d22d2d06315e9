"""Start the record node: camera + GPS + odometry -> dataset v1 (and SyncedFrame messages).

ros2 launch pose2rgbd record.launch.py dataset:=/data/flight01 [image_topic:=/camera/image_raw ...]
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    args = [
        DeclareLaunchArgument(
            "dataset", default_value="", description="dataset directory to append to (empty: only publish SyncedFrame)"
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("pose2rgbd"), "config", "record.yaml"]),
            description="YAML with the record node's parameters (/**: ros__parameters: ..., as config/record.yaml; "
            "a section keyed by the bare node name does not apply under the namespace)",
        ),
        DeclareLaunchArgument("namespace", default_value="pose2rgbd", description="namespace of the node and topics"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw", description="camera image topic"),
        DeclareLaunchArgument("gps_topic", default_value="/gps/fix", description="NavSatFix topic"),
        DeclareLaunchArgument("odom_topic", default_value="/odom", description="Odometry topic"),
        DeclareLaunchArgument(
            "base_frame",
            default_value="",
            description="mount.base_frame: frame of the odometry (empty: base_link, base_footprint or body)",
        ),
        DeclareLaunchArgument(
            "camera_frame",
            default_value="",
            description="mount.camera_frame: camera optical frame (empty: the images' frame_id)",
        ),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag playback)"),
    ]
    node = Node(
        package="pose2rgbd",
        executable="record_node",
        name="pose2rgbd_recorder",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "output.dataset": ParameterValue(LaunchConfiguration("dataset"), value_type=str),
                "topics.image": ParameterValue(LaunchConfiguration("image_topic"), value_type=str),
                "topics.gps": ParameterValue(LaunchConfiguration("gps_topic"), value_type=str),
                "topics.odom": ParameterValue(LaunchConfiguration("odom_topic"), value_type=str),
                "mount.base_frame": ParameterValue(LaunchConfiguration("base_frame"), value_type=str),
                "mount.camera_frame": ParameterValue(LaunchConfiguration("camera_frame"), value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
    )
    return LaunchDescription([*args, node])
