"""Start the localize node: camera images -> camera pose in the world frame with a calibrated covariance.

ros2 launch pose2rgbd localize.launch.py map:=/path/place_map [gps_topic:=/fix] [covariance_file:=/path/calib.yaml]
ros2 launch pose2rgbd localize.launch.py checkpoint:=/path/localizer.pt covariance_file:=/path/calib.yaml \
    [image_topic:=/camera/image_raw image_type:=raw publish_tf:=false device:=cuda ...]

With map:= the node matches each image against the place map (`pose2rgbd map build`) and publishes a pose or, with
the reason in its status, none; with checkpoint:= only, it runs the image -> pose model (PoseGAN); with both and
method:=structure+posegan, the model's estimate is the map search's prior.
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
            "checkpoint",
            default_value="",
            description="image -> pose checkpoint (.pt) written by `pose2rgbd train` (e.g. PoseGAN); empty with map:=",
        ),
        DeclareLaunchArgument("map", default_value="", description="place map folder (`pose2rgbd map build`)"),
        DeclareLaunchArgument(
            "method", default_value="auto", description="auto | structure | posegan | structure+posegan"
        ),
        DeclareLaunchArgument("gps_topic", default_value="", description="NavSatFix used as a prior (empty: none)"),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("pose2rgbd"), "config", "localize.yaml"]),
            description="YAML with the localize node's parameters (/**: ros__parameters: ..., as config/localize.yaml; "
            "a section keyed by the bare node name does not apply under the namespace)",
        ),
        DeclareLaunchArgument("namespace", default_value="pose2rgbd", description="namespace of the node and topics"),
        DeclareLaunchArgument(
            "image_topic", default_value="/camera/image_raw", description="camera images to localize"
        ),
        DeclareLaunchArgument(
            "image_type", default_value="raw", description="'raw' (sensor_msgs/Image) or 'compressed' (CompressedImage)"
        ),
        DeclareLaunchArgument(
            "world_frame", default_value="", description="frame_id of the poses (empty: the checkpoint's world frame)"
        ),
        DeclareLaunchArgument(
            "covariance_file",
            default_value="",
            description="calibration YAML from `pose2rgbd localize calibrate` (empty: conservative default covariance)",
        ),
        DeclareLaunchArgument(
            "publish_tf", default_value="false", description="also broadcast TF world_frame -> camera_localized (debug)"
        ),
        DeclareLaunchArgument("device", default_value="auto", description="torch device: auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag playback)"),
    ]
    node = Node(
        package="pose2rgbd",
        executable="localize_node",
        name="pose2rgbd_localizer",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "engine.checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                "map": ParameterValue(LaunchConfiguration("map"), value_type=str),
                "method": ParameterValue(LaunchConfiguration("method"), value_type=str),
                "topics.gps": ParameterValue(LaunchConfiguration("gps_topic"), value_type=str),
                "engine.device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "topics.image": ParameterValue(LaunchConfiguration("image_topic"), value_type=str),
                "image_type": ParameterValue(LaunchConfiguration("image_type"), value_type=str),
                "world_frame": ParameterValue(LaunchConfiguration("world_frame"), value_type=str),
                "covariance_file": ParameterValue(LaunchConfiguration("covariance_file"), value_type=str),
                "publish_tf": ParameterValue(LaunchConfiguration("publish_tf"), value_type=bool),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
    )
    return LaunchDescription([*args, node])
